// cvmfs-idmap-fuse: a read-only FUSE view of a CVMFS client mount that the
// kernel lets be ID-mapped, for rootless podman (issue 15, docs/rootless.md).
//
//	cvmfs-idmap-fuse [-passthrough] [-cache 10s] SOURCE MOUNTPOINT
//
// The CVMFS 2.12 client's FUSE mount refuses ID mapping (mount_setattr with
// MOUNT_ATTR_IDMAP gives EINVAL): since Linux 6.12 a FUSE mount may be
// ID-mapped only when its server announces FUSE_ALLOW_IDMAP, which cvmfs2
// does not, and the kernel overlay refuses ID mapping of itself too. Run by
// root (a system service, one per repository, shared by every user), this
// program passes SOURCE through unchanged (names, raw .wh.* files, owners,
// modes, xattrs such as user.hash) and announces FUSE_ALLOW_IDMAP, so that
// cvmfs-idmap-view can ID-map MOUNTPOINT into each user's podman namespace.
// The administrator lists MOUNTPOINT, not SOURCE, in
// /etc/containers/cvmfs-idmap-view.conf.
//
// The mount is read-only, nosuid, nodev, with default_permissions (the kernel
// checks permissions from the owners it shows, which the ID mapping
// requires); the server opens files read-only whatever it is asked.
//
// With -passthrough, reads go from the kernel straight to the files this
// server opened on SOURCE (FUSE passthrough, Linux 6.9): no request per read,
// but the mount then counts as one stacked filesystem, so SOURCE must be a
// plain client mount (not the publishing machine's overlay) for podman's
// overlay to stack on it.
//
// SIGTERM or SIGINT unmounts and exits (within 5 s, also while users'
// views of the mount remain: they fail from then on).
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose files are only ever opened read-only.
type node struct{ fs.LoopbackNode }

var _ = (fs.NodeOpener)((*node)(nil))

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		return nil, 0, syscall.EROFS
	}
	return n.LoopbackNode.Open(ctx, flags)
}

func main() {
	log.SetFlags(0)
	passthrough := flag.Bool("passthrough", false, "let the kernel read files directly (FUSE passthrough)")
	cache := flag.Duration("cache", 10*time.Second, "how long the kernel may cache names and attributes (a new publish shows after at most this)")
	debug := flag.Bool("debug", false, "log every FUSE request")
	flag.Parse()
	if flag.NArg() != 2 {
		log.Fatalf("usage: cvmfs-idmap-fuse [-passthrough] [-cache 10s] SOURCE MOUNTPOINT")
	}
	src, mnt := flag.Arg(0), flag.Arg(1)
	if *cache < 0 || *cache > time.Hour {
		log.Fatalf("cvmfs-idmap-fuse: -cache %v: must be between 0 and 1h", *cache)
	}
	var s syscall.Stat_t
	if err := syscall.Stat(src, &s); err != nil {
		log.Fatalf("cvmfs-idmap-fuse: source %s: %v", src, err)
	}
	if s.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		log.Fatalf("cvmfs-idmap-fuse: source %s: not a directory", src)
	}
	root := &fs.LoopbackRoot{Path: src, Dev: uint64(s.Dev)}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{fs.LoopbackNode{RootData: r}}
	}
	root.RootNode = root.NewNode(root, nil, "", &s)

	var disabled uint64
	if !*passthrough {
		// Passthrough makes the mount count as a stacked filesystem.
		disabled = fuse.CAP_PASSTHROUGH
	}
	server, err := fs.Mount(mnt, root.RootNode, &fs.Options{
		EntryTimeout: cache,
		AttrTimeout:  cache,
		MountOptions: fuse.MountOptions{
			AllowOther:           true,
			IDMappedMount:        true,
			FsName:               "cvmfs-idmap:" + src,
			Name:                 "cvmfs-idmap",
			Options:              []string{"ro", "nosuid", "nodev", "default_permissions"},
			Debug:                *debug,
			MaxReadAhead:         128 << 10,
			DirectMount:          true,
			DisabledCapabilities: disabled,
		},
	})
	if err != nil {
		log.Fatalf("cvmfs-idmap-fuse: mount %s on %s: %v", src, mnt, err)
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go stopOn(sig, server, mnt)
	server.Wait()
}

// stopOn unmounts on the first signal and returns from the process when the
// kernel ends the connection. Unmounting detaches MOUNTPOINT only: the
// users' ID-mapped views are clones of the mount and keep it alive, and an
// already detached mount cannot be unmounted again; so after stopGrace the
// process exits anyway, the kernel aborts the connection and those views
// fail (ENOTCONN) until the users attach new ones.
func stopOn(sig <-chan os.Signal, server *fuse.Server, mnt string) {
	<-sig
	done := make(chan error, 1)
	go func() { done <- server.Unmount() }()
	select {
	case err := <-done:
		if err == nil {
			return // server.Wait returns
		}
		log.Printf("cvmfs-idmap-fuse: unmount %s: %v; exiting", mnt, err)
	case <-time.After(stopGrace):
		log.Printf("cvmfs-idmap-fuse: %s still in use after %v (ID-mapped views of it): exiting, they fail from now on", mnt, stopGrace)
	}
	os.Exit(0)
}

// stopGrace: how long a stop waits for the last user of the mount.
const stopGrace = 5 * time.Second
