//go:build linux && cgo

// Copied into drivers/cvmfs of the patched storage module by
// hack/bench-graphtest.sh (not part of the patches): runs every DriverBench*
// benchmark of drivers/graphtest for cvmfs, overlay and vfs in one test binary,
// so the ratios come from one run on the same machine state.

package cvmfs

import (
	"testing"

	"go.podman.io/storage/drivers/graphtest"
	_ "go.podman.io/storage/drivers/overlay"
	_ "go.podman.io/storage/drivers/vfs"
)

var compareDrivers = []string{"cvmfs", "overlay", "vfs"}

func compare(b *testing.B, bench func(b *testing.B, driver string)) {
	for _, name := range compareDrivers {
		b.Run(name, func(b *testing.B) { bench(b, name) })
	}
}

func BenchmarkCompareExists(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchExists(b, d) })
}

func BenchmarkCompareGetEmpty(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchGetEmpty(b, d) })
}

func BenchmarkCompareDiffBase(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffBase(b, d) })
}

func BenchmarkCompareDiffSmallUpper(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffN(b, 10, 10, d) })
}

func BenchmarkCompareDiff10KFileUpper(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffN(b, 10, 10000, d) })
}

func BenchmarkCompareDiff10KFilesBottom(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffN(b, 10000, 10, d) })
}

func BenchmarkCompareDiffApply100(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDiffApplyN(b, 100, d) })
}

func BenchmarkCompareDiff20Layers(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDeepLayerDiff(b, 20, d) })
}

func BenchmarkCompareRead20Layers(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDeepLayerRead(b, 20, d) })
}
