package persist

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// releaseTablePages gives back the resident pages of the store's table
// files. Badger v4 maps every table file (.sst) into memory and keeps it
// mapped; each page it ever wrote or read stays counted in the process's
// resident set although it is clean file data the kernel holds in its
// page cache anyway (on a gateway holding a large bridge backlog, about
// 100 MiB of RSS for nothing). MADV_DONTNEED on those shared file
// mappings drops only the process's page table entries: the data stays in
// the page cache and in the file (a dirty page is handed to the page
// cache first), and the next read maps it back. It reports how many bytes
// of mappings it advised.
func (s *Store) releaseTablePages() int64 {
	if s.opts.Durability == Memory || s.opts.Dir == "" {
		return 0
	}
	dir, err := filepath.Abs(s.opts.Dir)
	if err != nil {
		return 0
	}
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0
	}
	prefix := []byte(dir + string(filepath.Separator))
	var total int64
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := bytes.Fields(sc.Bytes())
		if len(f) < 6 || !bytes.HasPrefix(f[5], prefix) || !bytes.HasSuffix(f[5], []byte(".sst")) {
			continue
		}
		lo, hi, ok := bytes.Cut(f[0], []byte("-"))
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED)
		if errno == 0 {
			total += int64(end - start)
		}
	}
	return total
}
