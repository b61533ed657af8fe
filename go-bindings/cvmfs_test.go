//go:build linux && cgo

package cvmfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/drivers/graphtest"
	"go.podman.io/storage/pkg/archive"
	"go.podman.io/storage/pkg/reexec"
	"go.podman.io/storage/pkg/stringid"
)

func init() {
	// chrootarchive (used by the naive diff fallback) re-executes the test
	// binary; reexec.Init dispatches those children.
	reexec.Init()
}

// Tests below share one driver between TestCvmfsSetup and TestCvmfsTeardown,
// as the in-tree drivers' tests do: keep new tests between the two.

func TestCvmfsSetup(t *testing.T) {
	// graphtest skips every test when a driver fails to initialise; here that
	// is a failure, so check Init on its own first.
	root := t.TempDir()
	d, err := graphdriver.GetDriver(driverName, graphdriver.Options{Root: root, RunRoot: t.TempDir()})
	require.NoError(t, err, "initialising the cvmfs driver")
	require.NoError(t, d.Cleanup())

	graphtest.GetDriverNoCleanup(t, driverName)
}

func TestCvmfsCreateEmpty(t *testing.T) {
	graphtest.DriverTestCreateEmpty(t, driverName)
}

func TestCvmfsCreateBase(t *testing.T) {
	graphtest.DriverTestCreateBase(t, driverName)
}

func TestCvmfsCreateSnap(t *testing.T) {
	graphtest.DriverTestCreateSnap(t, driverName)
}

func TestCvmfsCreateFromTemplate(t *testing.T) {
	graphtest.DriverTestCreateFromTemplate(t, driverName)
}

func TestCvmfs128LayerRead(t *testing.T) {
	graphtest.DriverTestDeepLayerRead(t, 128, driverName)
}

func TestCvmfsDiffApply10Files(t *testing.T) {
	graphtest.DriverTestDiffApply(t, 10, driverName)
}

func TestCvmfsDiffApply100Files(t *testing.T) {
	graphtest.DriverTestDiffApply(t, 100, driverName)
}

func TestCvmfsDiffApply1000Files(t *testing.T) {
	graphtest.DriverTestDiffApply(t, 1000, driverName)
}

func TestCvmfsChanges(t *testing.T) {
	graphtest.DriverTestChanges(t, driverName)
}

// The suite's quota test needs a driver that honours the "size" storage
// option; cvmfs, like vfs, has none. Skip only when the driver says so
// (ErrNotSupported): if it ever accepts "size", the suite's test runs.
func TestCvmfsSetQuota(t *testing.T) {
	driver := graphtest.GetDriver(t, driverName)
	err := driver.Create("quota-probe", "", &graphdriver.CreateOpts{StorageOpt: map[string]string{"size": "50M"}})
	if err == nil {
		require.NoError(t, driver.Remove("quota-probe"))
		graphtest.DriverTestSetQuota(t, driverName)
		return
	}
	require.ErrorIs(t, err, graphdriver.ErrNotSupported, "creating a layer with a size limit")
	t.Skipf("cvmfs has no quota support (like vfs): %v", err)
}

func TestCvmfsEcho(t *testing.T) {
	graphtest.DriverTestEcho(t, driverName)
}

func TestCvmfsListLayers(t *testing.T) {
	graphtest.DriverTestListLayers(t, driverName)
}

// Errors from the core come back as Go errors that name the layer and match
// the sentinels containers/storage tests with errors.Is.
func TestCvmfsErrorsNameLayerAndMapSentinels(t *testing.T) {
	driver := graphtest.GetDriver(t, driverName)

	_, err := driver.Get("no-such-layer", graphdriver.MountOpts{})
	require.Error(t, err)
	assert.ErrorIs(t, err, graphdriver.ErrLayerUnknown)
	assert.Contains(t, err.Error(), "no-such-layer")

	err = driver.Create("child-of-nothing", "no-such-parent", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no-such-parent")
	assert.False(t, driver.Exists("child-of-nothing"))

	// Creating an ID again replaces a leftover directory, as overlay does (a
	// crash between the driver and the layer store can leave one behind).
	require.NoError(t, driver.Create("twice", "", nil))
	t.Cleanup(func() { _ = driver.Remove("twice") })
	require.NoError(t, addFile(driver, "twice", "stale", "left over"))
	require.NoError(t, driver.Create("twice", "", nil))
	root, err := driver.Get("twice", graphdriver.MountOpts{})
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(root, "stale"))
	require.NoError(t, driver.Put("twice"))

	// Removing what is not there succeeds, as with the other drivers.
	assert.NoError(t, driver.Remove("no-such-layer"))
}

// The Go constants are the header's result codes, which come from the core's
// one ErrorCode enum: every value the core names is a Go constant, and every
// Go constant is named by the core.
func TestCvmfsResultCodesMatchCore(t *testing.T) {
	known := map[int]bool{}
	for _, code := range knownCodes {
		assert.False(t, known[code], "code %d listed twice", code)
		known[code] = true
		assert.NotEmpty(t, codeName(code), "the core has no name for Go's code %d", code)
	}
	for n := -1; n <= 1000; n++ {
		if name := codeName(n); name != "" && !known[n] {
			t.Errorf("the core's code %d (%s) has no Go constant in cabi.go", n, name)
		}
	}
	e := &Error{Op: "get", Layer: "l", Code: codeBusy}
	assert.Equal(t, "cvmfs: get layer l: busy", e.Error())
}

// Unknown driver options are rejected, naming the key.
func TestCvmfsUnknownOptionRejected(t *testing.T) {
	home := t.TempDir()
	_, err := Init(filepath.Join(home, driverName), graphdriver.Options{
		Root: home, RunRoot: t.TempDir(), DriverOptions: []string{"cvmfs.no_such_option=1"},
	})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no_such_option")
}

// Options of other drivers' storage.conf tables, which storage hands to every
// driver since 1.63, are skipped; the driver's own still take effect, and an
// unknown prefix is still an error.
func TestCvmfsOtherDriversOptionsSkipped(t *testing.T) {
	home := t.TempDir()
	d, err := Init(filepath.Join(home, driverName), graphdriver.Options{
		Root: home, RunRoot: t.TempDir(), DriverOptions: []string{
			"overlay.mountopt=nodev,metacopy=on", "vfs.sync=filesystem", "Overlay2.size=10G",
			"btrfs.min_space=1G", "zfs.fsname=tank", "cvmfs.repository_timeout=2",
		},
	})
	require.NoError(t, err)
	require.NoError(t, d.Cleanup())

	_, err = Init(filepath.Join(home, driverName), graphdriver.Options{
		Root: home, RunRoot: t.TempDir(), DriverOptions: []string{"cvmsf.repository_timeout=2"},
	})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cvmsf.repository_timeout")

	_, err = Init(filepath.Join(home, driverName), graphdriver.Options{
		Root: home, RunRoot: t.TempDir(), DriverOptions: []string{"overlay.mountopt=nodev", "cvmfs.repository_timeout=0"},
	})
	require.Error(t, err, "the driver's own options are still checked")
	assert.Contains(t, err.Error(), "repository_timeout")
}

// A reader that closes a Diff stream early must not hang or leak the writer;
// the driver stays usable and a full diff afterwards is complete.
func TestCvmfsDiffClosedEarly(t *testing.T) {
	driver := graphtest.GetDriver(t, driverName)
	require.NoError(t, driver.Create("early-base", "", nil))
	t.Cleanup(func() { _ = driver.Remove("early-base") })
	require.NoError(t, driver.Create("early", "early-base", nil))
	t.Cleanup(func() { _ = driver.Remove("early") })
	root, err := driver.Get("early", graphdriver.MountOpts{})
	require.NoError(t, err)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, more than a pipe holds
	for i := range 8 {
		require.NoError(t, os.WriteFile(filepath.Join(root, "f"+string(rune('a'+i))), big, 0o644))
	}
	require.NoError(t, driver.Put("early"))

	done := make(chan error, 1)
	go func() {
		rc, err := driver.Diff("early", nil, "early-base", nil, "")
		if err != nil {
			done <- err
			return
		}
		if _, err := io.ReadFull(rc, make([]byte, 4096)); err != nil {
			done <- err
			return
		}
		done <- rc.Close()
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("closing a Diff stream early hangs")
	}

	rc, err := driver.Diff("early", nil, "early-base", nil, "")
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Greater(t, n, int64(8<<20), "full diff holds all 8 MiB of file data")
}

// A diff stream that fails part-way fails ApplyDiff with the stream's error.
func TestCvmfsApplyDiffStreamError(t *testing.T) {
	driver := graphtest.GetDriver(t, driverName)
	require.NoError(t, driver.Create("apply-src", "", nil))
	t.Cleanup(func() { _ = driver.Remove("apply-src") })
	root, err := driver.Get("apply-src", graphdriver.MountOpts{})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "file"), bytes.Repeat([]byte("x"), 1<<20), 0o644))
	require.NoError(t, driver.Put("apply-src"))
	rc, err := driver.Diff("apply-src", nil, "", nil, "")
	require.NoError(t, err)
	tarball, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())

	require.NoError(t, driver.Create("apply-dst", "", nil))
	t.Cleanup(func() { _ = driver.Remove("apply-dst") })
	broken := errors.New("registry connection reset")
	_, err = driver.ApplyDiff("apply-dst", graphdriver.ApplyDiffOpts{
		Diff: io.MultiReader(bytes.NewReader(tarball[:len(tarball)/2]), &failingReader{broken}),
	})
	require.Error(t, err)
	assert.ErrorIs(t, err, broken)
	assert.Contains(t, err.Error(), "apply-dst")

	// The whole stream applies, and DiffGetter serves the layer's files.
	require.NoError(t, driver.Create("apply-ok", "", nil))
	t.Cleanup(func() { _ = driver.Remove("apply-ok") })
	size, err := driver.ApplyDiff("apply-ok", graphdriver.ApplyDiffOpts{Diff: bytes.NewReader(tarball)})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, size, int64(1<<20))
	getter, err := driver.(*graphtest.Driver).Driver.(graphdriver.DiffGetterDriver).DiffGetter("apply-ok")
	require.NoError(t, err)
	f, err := getter.Get("file")
	require.NoError(t, err)
	content, err := io.ReadAll(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = getter.Get("../../../etc/passwd")
	assert.Error(t, err, "a tar-split name must not leave the layer")
	_, err = getter.Get("no-such-file")
	assert.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, getter.Close())
	assert.Equal(t, 1<<20, len(content))
}

// addFile writes one file into a layer through a mount.
func addFile(driver graphdriver.Driver, layer, name, content string) error {
	root, err := driver.Get(layer, graphdriver.MountOpts{})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
		_ = driver.Put(layer)
		return err
	}
	return driver.Put(layer)
}

type failingReader struct{ err error }

func (r *failingReader) Read([]byte) (int, error) { return 0, r.err }

// Changes against a layer that is not the direct parent go through the naive
// fallback and still report the right paths.
func TestCvmfsChangesAgainstGrandparent(t *testing.T) {
	driver := graphtest.GetDriver(t, driverName)
	for _, l := range [][2]string{{"gp", ""}, {"p", "gp"}, {"c", "p"}} {
		require.NoError(t, driver.Create(l[0], l[1], nil))
		id := l[0]
		t.Cleanup(func() { _ = driver.Remove(id) })
		root, err := driver.Get(id, graphdriver.MountOpts{})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(root, "in-"+id), []byte(id), 0o644))
		require.NoError(t, driver.Put(id))
	}
	changes, err := driver.Changes("c", nil, "gp", nil, "")
	require.NoError(t, err)
	var paths []string
	for _, c := range changes {
		if c.Kind == archive.ChangeAdd && strings.HasPrefix(c.Path, "/in-") {
			paths = append(paths, c.Path)
		}
	}
	assert.ElementsMatch(t, []string{"/in-p", "/in-c"}, paths)
}

// With a separate image store, image layers live in <imagestore>/cvmfs and
// container layers in the graph root, stacked across the two homes; the core
// finds each layer in its home whatever its ID looks like.
func TestCvmfsSeparateImageStore(t *testing.T) {
	graphRoot, imageStore := t.TempDir(), t.TempDir()
	driver, err := Init(filepath.Join(graphRoot, driverName), graphdriver.Options{
		Root: graphRoot, RunRoot: t.TempDir(), ImageStore: imageStore,
	})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, driver.Cleanup()) })
	imageLayer, containerLayer := "image-layer", stringid.GenerateRandomID()

	require.NoError(t, driver.Create(imageLayer, "", nil))
	require.NoError(t, addFile(driver, imageLayer, "from-image", "image"))
	require.NoError(t, driver.CreateReadWrite(containerLayer, imageLayer, nil))
	assert.DirExists(t, filepath.Join(imageStore, driverName, "layers", imageLayer))
	for _, c := range []struct{ id, home string }{
		{imageLayer, filepath.Join(imageStore, driverName)},
		{containerLayer, filepath.Join(graphRoot, driverName)},
	} {
		meta, err := driver.Metadata(c.id)
		require.NoError(t, err)
		assert.Equal(t, "local", meta["Kind"], "%s: %v", c.id, meta)
		assert.True(t, strings.HasPrefix(meta["UpperDir"], c.home+"/"), "%s lives under %s: %v", c.id, c.home, meta)
	}
	assert.Contains(t, driver.Status(), [2]string{"Image Store", imageStore})

	root, err := driver.Get(containerLayer, graphdriver.MountOpts{})
	require.NoError(t, err)
	content, err := os.ReadFile(filepath.Join(root, "from-image"))
	require.NoError(t, err)
	assert.Equal(t, "image", string(content))
	require.NoError(t, driver.Put(containerLayer))

	layers, err := driver.ListLayers()
	require.NoError(t, err)
	assert.Equal(t, []string{containerLayer, imageLayer}, layers)
	assert.Empty(t, driver.AdditionalImageStores(), "the image store is not a read-only additional store")
	require.NoError(t, driver.Remove(containerLayer))
	require.NoError(t, driver.Remove(imageLayer))
	assert.False(t, driver.Exists(imageLayer))
	assert.NoDirExists(t, filepath.Join(imageStore, driverName, "layers", imageLayer))
}

func TestCvmfsTeardown(t *testing.T) {
	graphtest.PutDriver(t)
}

// Benchmarks set up a new driver each, like the in-tree drivers' benchmarks.

func BenchmarkExists(b *testing.B) {
	graphtest.DriverBenchExists(b, driverName)
}

func BenchmarkGetEmpty(b *testing.B) {
	graphtest.DriverBenchGetEmpty(b, driverName)
}

func BenchmarkDiffBase(b *testing.B) {
	graphtest.DriverBenchDiffBase(b, driverName)
}

func BenchmarkDiffSmallUpper(b *testing.B) {
	graphtest.DriverBenchDiffN(b, 10, 10, driverName)
}

func BenchmarkDiff10KFileUpper(b *testing.B) {
	graphtest.DriverBenchDiffN(b, 10, 10000, driverName)
}

func BenchmarkDiff10KFilesBottom(b *testing.B) {
	graphtest.DriverBenchDiffN(b, 10000, 10, driverName)
}

// graphtest.DriverBenchDiffApplyN in storage v1.62.0 calls ApplyDiff without
// the diff stream (ApplyDiffOpts{} where it means {Diff: arch}), so it fails
// for every driver (overlay: "empty archive", vfs: size mismatch, cvmfs: "no
// diff stream given"). hack/bench-graphtest.sh runs a corrected version.
func BenchmarkDiffApply100(b *testing.B) {
	if brokenDiffApplyBench {
		b.Skip("graphtest.DriverBenchDiffApplyN passes no diff stream to ApplyDiff (upstream bug in storage v1.62.0)")
	}
	graphtest.DriverBenchDiffApplyN(b, 100, driverName)
}

// brokenDiffApplyBench is set for the storage versions whose
// DriverBenchDiffApplyN omits the diff stream.
const brokenDiffApplyBench = true

func BenchmarkDiff20Layers(b *testing.B) {
	graphtest.DriverBenchDeepLayerDiff(b, 20, driverName)
}

func BenchmarkRead20Layers(b *testing.B) {
	graphtest.DriverBenchDeepLayerRead(b, 20, driverName)
}
