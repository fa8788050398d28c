package persist

import "time"

// Space after a drain. Messages under the value threshold live in Badger's
// tables, not its value log, so value-log GC cannot give their space back.
// Badger compacts a level only when it outgrows its target size, and drops
// a deleted key only when its tombstone is compacted into the bottom level
// that holds the key. Once a backlog is drained its tombstones sit in the
// upper levels, above the records they delete, too small to be compacted,
// and nothing moves them while the store is quiet (measured: 1,000,000
// queued and drained messages left 81 % of the peak on disk, for good).
// So on every GC tick, when enough tombstones wait above the bottom level,
// the store flattens: DB.Flatten compacts every level into the bottom one,
// dropping them with the records they delete (measured: 2-3 % of the peak
// left, 0.1-1 s of compaction while writes go on).

// Flatten thresholds: stale data above the bottom level of at least
// flattenStale always warrants it; below flattenMinStale never; between,
// when it is at least a quarter of the bottom level.
const (
	flattenStale    = 8 << 20
	flattenMinStale = 1 << 20
)

// compactStale flattens the tables when deleted records wait to be
// dropped (see above). It runs on the GC goroutine, before value-log GC:
// compactions tell Badger which value-log files hold garbage.
func (s *Store) compactStale() {
	levels := s.db.Levels()
	bottom := -1
	for _, l := range levels {
		if l.NumTables > 0 {
			bottom = l.Level
		}
	}
	var stale, bottomSize int64
	for _, l := range levels {
		if l.Level < bottom {
			stale += l.StaleDatSize
		} else if l.Level == bottom {
			bottomSize = l.Size
		}
	}
	if stale < flattenMinStale || (stale < flattenStale && 4*stale < bottomSize) {
		return
	}
	start := time.Now()
	if err := s.db.Flatten(1); err != nil {
		s.log.Warn("compacting deleted records failed", "err", err)
		return
	}
	s.flattens.Add(1)
	lsm, _ := s.db.Size()
	s.log.Info("compacted deleted records", "stale_bytes", stale, "took", time.Since(start).Round(time.Millisecond),
		"lsm_bytes", lsm)
}
