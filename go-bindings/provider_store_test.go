//go:build linux && cgo

package cvmfs_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.podman.io/storage"
	graphdriver "go.podman.io/storage/drivers"
	"go.podman.io/storage/drivers/cvmfs"
)

var _ graphdriver.ImageProvider = (*cvmfs.Driver)(nil)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// ducc writes a repository as DUCC leaves it, holding one single-layer
// image named name; returns the image ID and the layer's blob digest.
func ducc(t *testing.T, repo, name string) (string, string) {
	blob, diff := sha([]byte("blob")), sha([]byte("diff"))
	layer := filepath.Join(repo, ".layers", blob[:2], blob)
	require.NoError(t, os.MkdirAll(filepath.Join(layer, "layerfs"), 0o755))
	writeJSON(t, filepath.Join(layer, ".metadata", "layers.json"), []map[string]any{{
		"id": diff, "created": "2024-01-02T03:04:05Z", "compressed-diff-digest": "sha256:" + blob,
		"diff-digest": "sha256:" + diff, "diff-size": 10240,
	}})
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diff}},
	})
	require.NoError(t, err)
	id := sha(config)
	images := filepath.Join(repo, "podmanStore", "overlay-images")
	cfg := filepath.Join(images, id, "="+base64.StdEncoding.EncodeToString([]byte("sha256:"+id)))
	require.NoError(t, os.MkdirAll(filepath.Dir(cfg), 0o755))
	require.NoError(t, os.WriteFile(cfg, config, 0o644))
	writeJSON(t, filepath.Join(images, "images.json"), []map[string]any{{"id": id, "names": []string{name}, "layer": diff}})
	writeJSON(t, filepath.Join(repo, "podmanStore", "overlay-layers", "layers.json"), []map[string]any{{
		"id": diff, "compressed-diff-digest": "sha256:" + blob, "compressed-size": 123,
		"diff-digest": "sha256:" + diff, "diff-size": 10240,
	}})
	return id, blob
}

func duccStore(t *testing.T, repo string) storage.Store {
	t.Helper()
	root := t.TempDir()
	s, err := storage.GetStore(storage.StoreOptions{
		RunRoot: filepath.Join(root, "run"), GraphRoot: filepath.Join(root, "graph"),
		GraphDriverName:    "cvmfs",
		GraphDriverOptions: []string{"cvmfs.ducc_repositories=" + repo},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = s.Shutdown(true) })
	return s
}

// With DUCC's images listed on demand (the default), the store lists none
// until one is looked up: Image() by name asks the driver (patch 0005) and
// finds it after the read-only store reloads; a name DUCC does not hold is
// still unknown; a layer lookup by blob digest (what a pull does before
// downloading) finds the layer in a store that never listed the image.
func TestCvmfsStoreAsksForDuccImagesOnDemand(t *testing.T) {
	repo := t.TempDir()
	name := "registry.example.org/ducc/one:1"
	id, blob := ducc(t, repo, name)

	s := duccStore(t, repo)
	images, err := s.Images()
	require.NoError(t, err)
	assert.Empty(t, images, "nothing listed before use")
	_, err = s.Image("registry.example.org/ducc/none:1")
	assert.True(t, errors.Is(err, storage.ErrImageUnknown), "%v", err)
	img, err := s.Image(name)
	require.NoError(t, err)
	assert.Equal(t, id, img.ID)
	images, err = s.Images()
	require.NoError(t, err)
	assert.Len(t, images, 1)

	s2 := duccStore(t, repo)
	layers, err := s2.LayersByCompressedDigest(digest.Digest("sha256:" + blob))
	require.NoError(t, err)
	require.Len(t, layers, 1)
	assert.Equal(t, sha([]byte("diff")), layers[0].ID, "a base layer's ID is its diffID")
	images, err = s2.Images()
	require.NoError(t, err)
	assert.Empty(t, images, "a layer lookup lists no image")
}
