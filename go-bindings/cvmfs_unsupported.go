//go:build !linux || !cgo

package cvmfs

import (
	"fmt"

	graphdriver "go.podman.io/storage/drivers"
)

func init() {
	graphdriver.MustRegister("cvmfs", Init)
}

// Init always fails here: the driver needs Linux (overlayfs) and cgo (the Rust
// core is linked through its C ABI). Naming it then gives a clear error
// instead of "unknown driver".
func Init(home string, options graphdriver.Options) (graphdriver.Driver, error) {
	return nil, fmt.Errorf("cvmfs: the driver needs Linux and a cgo build: %w", graphdriver.ErrNotSupported)
}
