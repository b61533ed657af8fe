package config

import (
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A [storage.options.cvmfs] table in storage.conf reaches the driver as
// cvmfs.<key>=<value> options, and only for the cvmfs driver (storage v1.62:
// GetGraphDriverOptions gives the tables of the configured driver only).
func TestCvmfsOptionsTable(t *testing.T) {
	var conf struct {
		Options OptionsConfig `toml:"options"`
	}
	_, err := toml.Decode(`
[options.cvmfs]
repositories = "/cvmfs/unpacked.cern.ch,/cvmfs/other.example.org"
mountopt = "nodev"
repository_timeout = "3"
use_flat = "false"
mount_program = "/usr/bin/fuse-overlayfs"
store_views = "false"
owner_images = "false"
ducc_listing = "all"
`, &conf)
	require.NoError(t, err)

	assert.Equal(t, []string{
		"cvmfs.repositories=/cvmfs/unpacked.cern.ch,/cvmfs/other.example.org",
		"cvmfs.mountopt=nodev",
		"cvmfs.repository_timeout=3",
		"cvmfs.use_flat=false",
		"cvmfs.ducc_listing=all",
		"cvmfs.mount_program=/usr/bin/fuse-overlayfs",
		"cvmfs.store_views=false",
		"cvmfs.owner_images=false",
	}, GetGraphDriverOptions("cvmfs", conf.Options))
	assert.Empty(t, GetGraphDriverOptions("vfs", conf.Options))
}
