package main

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// sizeKeys are the config keys whose values are byte counts and so also
// accept a unit ("1MiB"). Indices in paths are written as [].
var sizeKeys = map[string]bool{
	"limits.max_packet_size":      true,
	"limits.max_queued_bytes":     true,
	"storage.max_disk":            true,
	"storage.min_free":            true,
	"bridges[].backlog.max_bytes": true,
}

// sizeUnits: decimal (KB = 1000) and binary (KiB = 1024) units, matched
// case-insensitively.
var sizeUnits = []struct {
	suffix string
	mult   uint64
}{
	// Longest suffixes first so "kib" is not read as "b".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

var errSize = errors.New("not a size")

// parseSize reads a byte count: a non-negative integer, optionally followed
// by a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; case-insensitive;
// spaces allowed before the unit), e.g. "1048576", "1MiB", "64 KB".
func parseSize(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	lower := strings.ToLower(s)
	mult := uint64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			s = strings.TrimSpace(s[:len(s)-len(u.suffix)])
			break
		}
	}
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, errSize
	}
	n, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 10, 64)
	if err != nil {
		return 0, errSize
	}
	if n > math.MaxUint64/mult {
		return 0, errSize
	}
	return n * mult, nil
}
