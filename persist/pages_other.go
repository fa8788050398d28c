//go:build !linux

package persist

// releaseTablePages is a no-op outside Linux (see pages_linux.go).
func (s *Store) releaseTablePages() int64 { return 0 }
