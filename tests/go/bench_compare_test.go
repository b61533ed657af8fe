//go:build linux && cgo

// Copied into drivers/cvmfs of the patched storage module by
// hack/bench-graphtest.sh (not part of the patches): runs every DriverBench*
// benchmark of drivers/graphtest for cvmfs, overlay and vfs in one test binary,
// so the ratios come from one run on the same machine state.

package cvmfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/drivers/graphtest"
	_ "go.podman.io/storage/drivers/overlay"
	_ "go.podman.io/storage/drivers/vfs"
	"go.podman.io/storage/pkg/stringid"
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

// graphtest.DriverBenchDiffApplyN in storage v1.62.0 calls ApplyDiff without
// the diff stream (ApplyDiffOpts{} instead of {Diff: arch}) and fails for every
// driver (overlay: "empty archive", vfs: size mismatch). This is the benchmark
// it means: diff a 100-file upper layer and apply the stream to a new layer.
func BenchmarkCompareDiffApply100(b *testing.B) {
	compare(b, func(b *testing.B, d string) { benchDiffApplyN(b, 100, d) })
}

func benchDiffApplyN(b *testing.B, fileCount int, driverName string) {
	driver := graphtest.GetDriver(b, driverName)
	base, upper := stringid.GenerateRandomID(), stringid.GenerateRandomID()
	if err := driver.Create(base, "", nil); err != nil {
		b.Fatal(err)
	}
	if err := writeFiles(driver, base, fileCount, "base"); err != nil {
		b.Fatal(err)
	}
	if err := driver.Create(upper, base, nil); err != nil {
		b.Fatal(err)
	}
	if err := writeFiles(driver, upper, fileCount, "upper"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		target := stringid.GenerateRandomID()
		if err := driver.Create(target, base, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		arch, err := driver.Diff(upper, nil, base, nil, "")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := driver.ApplyDiff(target, graphdriver.ApplyDiffOpts{Diff: arch}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		arch.Close()
		b.StartTimer()
	}
}

// writeFiles writes count small files (distinct content per tag) into layer.
func writeFiles(driver graphdriver.Driver, layer string, count int, tag string) error {
	root, err := driver.Get(layer, graphdriver.MountOpts{})
	if err != nil {
		return err
	}
	defer driver.Put(layer)
	for i := range count {
		dir := filepath.Join(root, fmt.Sprintf("dir%d", i%10))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		content := bytes.Repeat([]byte(fmt.Sprintf("%s-%d\n", tag, i)), 64)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%d", i)), content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func BenchmarkCompareDiff20Layers(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDeepLayerDiff(b, 20, d) })
}

func BenchmarkCompareRead20Layers(b *testing.B) {
	compare(b, func(b *testing.B, d string) { graphtest.DriverBenchDeepLayerRead(b, 20, d) })
}
