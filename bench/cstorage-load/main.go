// Command cstorage-load times what containers/storage does on every podman
// command with a read-only additional image store: open the store and list
// its images (images.json and layers.json parsed whole). One load per
// process, as podman does.
//
//	cstorage-load STORE
//
// STORE holds vfs-images/images.json and vfs-layers/layers.json (a copy of
// a store of ours with the driver prefix renamed: the vfs driver needs no
// C library). Built and run by bench/cstorage-load.sh.
package main

import (
	"fmt"
	"os"
	"time"

	"go.podman.io/storage"
	"go.podman.io/storage/types"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: cstorage-load STORE")
		os.Exit(2)
	}
	ro := os.Args[1]
	root, err := os.MkdirTemp("", "cstorage-load")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)
	opts := types.StoreOptions{
		GraphRoot:          root + "/root",
		RunRoot:            root + "/run",
		GraphDriverName:    "vfs",
		GraphDriverOptions: []string{"vfs.imagestore=" + ro},
	}
	start := time.Now()
	s, err := storage.GetStore(opts)
	if err != nil {
		panic(err)
	}
	images, err := s.Images()
	if err != nil {
		panic(err)
	}
	elapsed := time.Since(start)
	_, _ = s.Shutdown(true)
	fmt.Printf("MEASURE: containers/storage load, %d images: %.4f s\n", len(images), elapsed.Seconds())
}
