//go:build linux && cgo

package cvmfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/pkg/archive"
	"go.podman.io/storage/pkg/idtools"
)

// Diff returns an uncompressed OCI tar of the layer's changes relative to
// parent. The core writes it into a pipe from a goroutine; when it cannot diff
// against this parent (not the layer's direct parent), the naive diff runs.
func (d *Driver) Diff(id string, idMappings *idtools.IDMappings, parent string, parentIDMappings *idtools.IDMappings, mountLabel string) (io.ReadCloser, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("cvmfs: diff layer %s: creating pipe: %w", id, err)
	}
	s := &diffStream{r: r, done: make(chan struct{})}
	c := d.core
	mj := mappingsJSON(idMappings)
	go func() {
		defer close(s.done)
		s.err = c.diff(id, parent, mj, w)
		// EOF for the reader, after the error is recorded (the reader waits
		// on done when it sees EOF).
		w.Close()
	}()

	// Any tar, even an empty one, is at least 1024 bytes, so the first read
	// either returns data or EOF because the core failed before writing. That
	// is when NOT_SUPPORTED must switch to the naive diff.
	buf := make([]byte, 32*1024)
	n, rerr := io.ReadAtLeast(r, buf, 1)
	if n == 0 {
		<-s.done
		r.Close()
		if s.err != nil {
			if isNotSupported(s.err) {
				return d.naiveDiff.Diff(id, idMappings, parent, parentIDMappings, mountLabel)
			}
			return nil, s.err
		}
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("cvmfs: diff layer %s: reading the diff stream: %w", id, rerr)
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	s.head = bytes.NewReader(buf[:n])
	return s, nil
}

// diffStream is the reading side of a Diff: it yields the core's output and,
// at EOF, the core's error if it failed part-way.
type diffStream struct {
	head      *bytes.Reader
	r         *os.File
	done      chan struct{}
	err       error // set by the writer goroutine before done is closed
	closeOnce sync.Once
	closeErr  error
}

func (s *diffStream) Read(p []byte) (int, error) {
	if s.head.Len() > 0 {
		return s.head.Read(p)
	}
	n, err := s.r.Read(p)
	if err == io.EOF {
		<-s.done
		if s.err != nil {
			return n, s.err
		}
	}
	return n, err
}

// Close stops reading early if needed: closing the read end makes the core's
// next write fail, so its goroutine finishes, and Close waits for it.
func (s *diffStream) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.r.Close()
		<-s.done
	})
	return s.closeErr
}

// Changes lists the changes of the layer relative to parent.
func (d *Driver) Changes(id string, idMappings *idtools.IDMappings, parent string, parentIDMappings *idtools.IDMappings, mountLabel string) ([]archive.Change, error) {
	list, err := d.core.changes(id, parent)
	if isNotSupported(err) {
		return d.naiveDiff.Changes(id, idMappings, parent, parentIDMappings, mountLabel)
	}
	if err != nil {
		return nil, err
	}
	changes := make([]archive.Change, 0, len(list))
	for _, c := range list {
		kind := archive.ChangeType(c.Kind)
		if kind != archive.ChangeModify && kind != archive.ChangeAdd && kind != archive.ChangeDelete {
			return nil, errorf("changes", id, codeIO, "the core reported change kind %d for %q", c.Kind, c.Path)
		}
		changes = append(changes, archive.Change{Path: c.Path, Kind: kind})
	}
	return changes, nil
}

// DiffSize returns the size in bytes of the layer's changes relative to parent.
func (d *Driver) DiffSize(id string, idMappings *idtools.IDMappings, parent string, parentIDMappings *idtools.IDMappings, mountLabel string) (int64, error) {
	size, err := d.core.diffSize(id, parent)
	if isNotSupported(err) {
		return d.naiveDiff.DiffSize(id, idMappings, parent, parentIDMappings, mountLabel)
	}
	if err != nil {
		return 0, err
	}
	return size, nil
}

// DiffGetter gives tar-split direct access to the layer's files, so a layer's
// original tar can be reassembled byte for byte (push/save of read-only
// layers). A file is looked up in the layer's own directory first, then where
// the core says older copies live (ID-mapped layers, template copies), as
// overlay searches its diff directories.
func (d *Driver) DiffGetter(id string) (graphdriver.FileGetCloser, error) {
	dirs, err := d.core.layerContentDirs(id)
	if err != nil {
		return nil, err
	}
	if len(dirs) == 0 {
		return nil, errorf("diff getter", id, codeIO, "the core reported no content directory")
	}
	return &dirsFileGetter{layer: id, dirs: dirs}, nil
}

type dirsFileGetter struct {
	layer string
	dirs  []string
}

func (g *dirsFileGetter) Get(name string) (io.ReadCloser, error) {
	// Names come from the layer's tar-split record; never follow one out of
	// the layer's directories.
	rel := filepath.Clean(strings.TrimPrefix(name, "/"))
	if !filepath.IsLocal(rel) {
		return nil, errorf("diff getter", g.layer, codeInvalidArgument, "path %q escapes the layer", name)
	}
	for _, dir := range g.dirs {
		f, err := os.Open(filepath.Join(dir, rel))
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cvmfs: diff getter layer %s: %w", g.layer, err)
		}
	}
	return nil, fmt.Errorf("cvmfs: diff getter layer %s: %q not found in %s: %w", g.layer, name, strings.Join(g.dirs, ", "), os.ErrNotExist)
}

func (g *dirsFileGetter) Close() error { return nil }

// Compile-time checks that Driver provides what containers/storage looks for.
var (
	_ graphdriver.Driver           = (*Driver)(nil)
	_ graphdriver.DiffGetterDriver = (*Driver)(nil)
)
