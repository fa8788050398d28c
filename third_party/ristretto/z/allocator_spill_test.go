/*
 * SPDX-FileCopyrightText: © Hypermode Inc. <hello@hypermode.com>
 * SPDX-License-Identifier: Apache-2.0
 */

package z

import (
	"testing"
	"unsafe"
)

// ferrymq patch test (see PATCHES.md): allocations that spill past the
// first buffer must not overlap earlier ones. Before the patch this failed
// on 32-bit platforms (GOARCH=arm, 386), where the allocator went back to
// offset 0 of buffer 0 after its first spill.
func TestAllocatorSpillDoesNotOverlap(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		a := NewAllocator(1024, "spill")
		if reuse {
			// A pooled allocator keeps its buffers across Reset.
			for i := 0; i < 64; i++ {
				a.Allocate(1000)
			}
			a.Reset()
		}
		type span struct{ start, end uintptr }
		var spans []span
		for i := 0; i < 64; i++ {
			b := a.Allocate(1000)
			for j := range b {
				b[j] = byte(i)
			}
			s := uintptr(unsafe.Pointer(&b[0]))
			spans = append(spans, span{s, s + uintptr(len(b))})
		}
		for i, x := range spans {
			for j, y := range spans[:i] {
				if x.start < y.end && y.start < x.end {
					t.Fatalf("reuse=%v: allocation %d overlaps allocation %d", reuse, i, j)
				}
			}
		}
		a.Release()
	}
}
