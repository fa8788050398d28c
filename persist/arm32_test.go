package persist_test

// The 32-bit ARM regression test of DESIGN.md §4. ristretto/v2 v2.2.0's
// z.Allocator (the memory arena of Badger's table builder) computed
// uint64((bufIdx+1)<<32) in platform int: on armv7 the shift gives 0, so
// once a table spilled past the allocator's first buffer the builder went
// back to offset 0 of that buffer and overwrote the blocks already built.
// Badger then wrote corrupt .sst files. third_party/ristretto carries the
// fix (see its PATCHES.md). This test writes enough ~1 KB records for
// several memtable flushes and compactions, reopens the store and reads
// every record back. It runs natively everywhere; what matters is running
// it for armv7 under qemu-user (CI does):
//
//	GOARCH=arm GOARM=7 go test -exec qemu-arm-static -run Arm32 ./persist/

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/persist"
)

const (
	arm32Records   = 50_000
	arm32ValueSize = 1000 // under the profile's 1 KB ValueThreshold: values stay in the LSM tables
	arm32PerApply  = 100
)

func arm32Key(i int) []byte { return fmt.Appendf(nil, "v1/ret/arm32/%08d", i) }

// arm32Value is a deterministic, incompressible-looking value for record i
// (xorshift seeded by i), so that a block overwritten by another block is
// seen as a wrong value, not as an identical one.
func arm32Value(i int) []byte {
	v := make([]byte, arm32ValueSize)
	x := uint64(i)*0x9E3779B97F4A7C15 + 1
	for j := range v {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		v[j] = byte(x)
	}
	copy(v, fmt.Sprintf("record %d;", i))
	return v
}

func TestArm32LargeTablesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := persist.Options{Dir: dir, Durability: persist.Sync, Logger: log}

	s, err := persist.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i := 0; i < arm32Records; i += arm32PerApply {
		ops := make([]persist.Op, 0, arm32PerApply)
		for j := i; j < i+arm32PerApply && j < arm32Records; j++ {
			ops = append(ops, persist.Put(arm32Key(j), arm32Value(j)))
		}
		wg.Add(1)
		s.Apply(ops, func(err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	if firstErr != nil {
		s.Close()
		t.Fatalf("Apply: %v", firstErr)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// The records must have gone through Badger's table builder (memtable
	// flushes to L0 and compactions), not only its write-ahead log.
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	var sstBytes int64
	for _, f := range ssts {
		if fi, err := os.Stat(f); err == nil {
			sstBytes += fi.Size()
		}
	}
	if len(ssts) == 0 || sstBytes < 8<<20 {
		t.Fatalf("only %d .sst files, %d bytes, after %d records: the table builder was not exercised", len(ssts), sstBytes, arm32Records)
	}
	t.Logf("%d .sst files, %d MiB", len(ssts), sstBytes>>20)

	s, err = persist.Open(opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()

	// Every record by point lookup (bloom filters, table index)...
	bad := 0
	err = s.DB().View(func(txn *badger.Txn) error {
		for i := 0; i < arm32Records && bad < 10; i++ {
			item, err := txn.Get(arm32Key(i))
			if err != nil {
				t.Errorf("get %s: %v", arm32Key(i), err)
				bad++
				continue
			}
			if err := item.Value(func(v []byte) error {
				if !bytes.Equal(v, arm32Value(i)) {
					return errors.New("wrong value " + arm32Describe(v))
				}
				return nil
			}); err != nil {
				t.Errorf("get %s: %v", arm32Key(i), err)
				bad++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	if bad > 0 {
		t.Fatalf("%d or more records wrong or missing (stopped at 10)", bad)
	}

	// ...and by a scan, which must return exactly the records written, in
	// order.
	n := 0
	err = s.DB().View(func(txn *badger.Txn) error {
		prefix := []byte("v1/ret/arm32/")
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if want := arm32Key(n); !bytes.Equal(item.Key(), want) {
				return fmt.Errorf("scan: key %d is %q, want %q", n, item.Key(), want)
			}
			if err := item.Value(func(v []byte) error {
				if !bytes.Equal(v, arm32Value(n)) {
					return fmt.Errorf("scan: %s: wrong value %s", item.Key(), arm32Describe(v))
				}
				return nil
			}); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != arm32Records {
		t.Fatalf("scan found %d records, want %d", n, arm32Records)
	}
}

// arm32Describe shows the start of a wrong value (its "record N;" tag
// tells which record's bytes it holds).
func arm32Describe(v []byte) string {
	head := v
	if len(head) > 16 {
		head = head[:16]
	}
	return fmt.Sprintf("(%d bytes, starts %q)", len(v), strings.ToValidUTF8(string(head), "?"))
}
