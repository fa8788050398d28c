package persist

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ferrymq/ferrymq/session"
	"golang.org/x/sys/unix"
)

// DefaultMinFree is the free space Open keeps on the store's filesystem
// unless Options.MinFree says otherwise.
const DefaultMinFree = 64 << 20

// defaultQuotaTick is how often the quota goroutine wakes: every tick
// while the store is full, every quotaIdleTicks ticks otherwise.
const (
	defaultQuotaTick = time.Second
	quotaIdleTicks   = 3
	// pageTicks: every so many ticks (3 s) the resident pages of the table
	// files are given back (releaseTablePages).
	pageTicks = 3
)

// statfsFree returns the bytes available to unprivileged users on the
// filesystem holding dir.
func statfsFree(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

// dirUsage returns the disk space the files under dir use: their
// allocated blocks where the system reports them, else their sizes.
// Badger preallocates sparse files (a new store has 43 MB of apparent
// size in 24 KB of blocks), so apparent sizes would overstate the use.
func dirUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file Badger removed meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += int64(st.Blocks) * 512
		} else {
			total += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk use of %s: %w", dir, err)
	}
	return total, nil
}

// quotaChecked reports whether the store watches its disk space.
func (o *Options) quotaChecked() bool {
	return o.Durability != Memory
}

// quotaLoop re-evaluates the quota until Close: every tick while the
// store is full, every few ticks otherwise.
func (s *Store) quotaLoop() {
	defer close(s.quotaDone)
	t := time.NewTicker(s.opts.quotaTick)
	defer t.Stop()
	idle, pages := 0, 0
	for {
		select {
		case <-s.quotaStop:
			return
		case <-t.C:
		}
		if idle++; s.full.Load() || idle >= quotaIdleTicks {
			idle = 0
			s.checkQuota()
		}
		if pages++; pages >= pageTicks {
			pages = 0
			s.releaseTablePages()
		}
	}
}

// checkQuota measures free space and disk use and enters or leaves the
// full state. A failed measurement is logged once and changes nothing.
func (s *Store) checkQuota() {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	reason, err := s.overQuota()
	if err != nil {
		if !s.quotaErrLogged {
			s.quotaErrLogged = true
			s.log.Warn("cannot measure disk space; the quota is not enforced until it can", "err", err)
		}
		return
	}
	s.quotaErrLogged = false
	s.grown.Store(0)
	if reason != "" {
		s.enterFull(reason)
		return
	}
	// After ENOSPC from Badger the measurements may look fine (reserved
	// blocks, another quota): wait one tick before trying again.
	if at := s.noSpaceAt.Load(); at != 0 {
		if time.Since(time.Unix(0, at)) < s.opts.quotaTick {
			return
		}
		s.noSpaceAt.Store(0)
	}
	s.leaveFull()
}

// overQuota returns why the store is over its limits ("" when it is not).
func (s *Store) overQuota() (string, error) {
	o := &s.opts
	if o.MinFree >= 0 {
		free, err := o.statfs(o.Dir)
		if err != nil {
			return "", err
		}
		s.baseFree.Store(int64(min(free, 1<<62)))
		if free < uint64(o.MinFree) {
			return fmt.Sprintf("%d bytes free on the filesystem, below min free %d", free, o.MinFree), nil
		}
	}
	if o.MaxDisk > 0 {
		used, err := dirUsage(o.Dir)
		if err != nil {
			return "", err
		}
		s.baseUsed.Store(used)
		if used >= o.MaxDisk {
			return fmt.Sprintf("store uses %d bytes, max disk is %d", used, o.MaxDisk), nil
		}
	}
	return "", nil
}

// enterFull sets the full state, logging the transition once.
func (s *Store) enterFull(reason string) {
	s.fullReason.Store(&reason)
	if s.full.CompareAndSwap(false, true) {
		s.log.Warn("store full: refusing writes that store anything until space returns (deletes go on)", "reason", reason)
	}
}

// leaveFull clears the full state, logging the transition once.
func (s *Store) leaveFull() {
	if s.full.CompareAndSwap(true, false) {
		s.log.Info("store has space again: accepting writes")
	}
}

// Full reports whether the store is refusing writes that store anything
// because a disk limit is reached.
func (s *Store) Full() bool { return s.full.Load() }

// refuse fails r, which puts something, because the store is full.
func (s *Store) refuse(r *request) {
	s.refusedFull.Add(1)
	reason := "full"
	if p := s.fullReason.Load(); p != nil {
		reason = *p
	}
	s.report(r, fmt.Errorf("persist: %w: %s", session.ErrFull, reason))
}

// isNoSpace reports whether err is ENOSPC. Badger's y.Wrap flattens the
// errors it wraps into text, so the text is checked too.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), syscall.ENOSPC.Error())
}

// noSpace passes err through, except that ENOSPC is wrapped with
// session.ErrFull and puts the store in the full state.
func (s *Store) noSpace(err error) error {
	if err == nil || !isNoSpace(err) {
		return err
	}
	s.noSpaceAt.Store(time.Now().UnixNano())
	s.enterFull("no space left on device")
	return fmt.Errorf("%w: %w", session.ErrFull, err)
}

// refusing reports whether the writer must refuse r, which adds data:
// the store is full, or the disk the writes since the last measurement
// take (estimated) would take it past MaxDisk or below MinFree. So the
// limits hold between measurements too, within one request.
func (s *Store) refusing(r *request) bool {
	if s.full.Load() {
		return true
	}
	o := &s.opts
	if !o.quotaChecked() {
		return false
	}
	var n int64
	for i := range r.ops {
		n += diskCost(&r.ops[i])
	}
	g := s.grown.Add(n)
	if u := s.baseUsed.Load(); o.MaxDisk > 0 && u >= 0 && u+g > o.MaxDisk {
		s.enterFull(fmt.Sprintf("store uses about %d bytes (estimated since the last measurement), max disk is %d", u+g, o.MaxDisk))
		return true
	}
	if f := s.baseFree.Load(); o.MinFree >= 0 && f >= 0 && f-g < o.MinFree {
		s.enterFull(fmt.Sprintf("about %d bytes free on the filesystem (estimated since the last measurement), below min free %d", f-g, o.MinFree))
		return true
	}
	return false
}

// diskCost estimates the disk an op takes until the next measurement: a
// small value is written twice (the memtable's write-ahead log, then the
// table it is flushed to), a value at or above the ValueThreshold once (to
// the value log) with its key twice.
func diskCost(op *Op) int64 {
	k, v := int64(len(op.Key)), int64(len(op.Value))
	if v >= 1<<10 {
		return 2*k + v
	}
	return 2 * (k + v)
}
