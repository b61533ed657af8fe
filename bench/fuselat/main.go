// fuselat: a read-only FUSE view of a directory that behaves like a CVMFS
// client with a cold cache, for the benchmarks (bench/README.md).
//
//	fuselat [-latency 2ms] [-bandwidth 1000] [-chunk 8388608] [-parallel 16] [-stats FILE] SOURCE MOUNTPOINT
//
// Metadata (lookup, stat, readdir, readlink, xattrs) is answered at once: a
// CVMFS client has the file catalog locally once it is loaded. File contents
// are "fetched" the first time they are needed, in CVMFS's unit: a file up to
// -chunk bytes is one object fetched whole on its first open; a larger file is
// fetched chunk by chunk on the first read that touches each chunk. Every fetch
// waits -latency (one round trip to the site proxy) and then its share of a
// link of -bandwidth Mbit/s that all fetches queue on. At most -parallel
// fetches run at once (a CVMFS client opens at most 16 HTTP connections:
// kDefaultNumConnections in cvmfs/mountpoint.h, CURLMOPT_MAX_TOTAL_CONNECTIONS);
// more wait for a free slot. A reader that needs an object another request is
// already fetching waits for that fetch (as the client's download manager
// does), it neither fetches again nor gets it early. What was fetched stays
// (the client cache); the kernel page cache keeps it too.
//
// With -catalogs, file catalogs are modelled too, as a CVMFS client loads
// them: a directory holding a .cvmfscatalog file is the root of a nested
// catalog (as cvmfs_server makes one there), everything else belongs to the
// catalog of its nearest such ancestor, SOURCE itself to the root catalog
// (loaded when the client mounts: free here). The first lookup or listing in
// a directory whose catalog is not loaded loads it, after its parent catalog
// (a chain is loaded one level after the other, as the client walks down),
// as one fetch of -catalog-entry-bytes per entry plus -catalog-base-bytes
// (calibrated in bench/README.md); concurrent needs of one catalog wait for
// the one load. The stat of a nested catalog's root directory is answered
// by its parent catalog. Loads are logged as "catalog" lines with chunk -2.
//
// Bytes fetched, fetches, opens and bytes read through FUSE are written as JSON
// to -stats on SIGUSR1 and on exit (SIGTERM/SIGINT unmounts).
//
// With -claim-uid N, every entry is reported as owned by N:N, as a CVMFS client
// mounted with CVMFS_CLAIM_OWNERSHIP=yes (CVMFS's default) reports every file
// as owned by the uid of its cvmfs2 process. Names are passed through as they
// are (raw .wh.* files included, unlike fuse-overlayfs, which takes them for
// its own whiteouts).
//
// Like cvmfs2 (which does not use FUSE passthrough), the mount adds nothing
// to the kernel's filesystem stacking depth, so overlays stack on it as on a
// client mount (with passthrough negotiated, a FUSE mount counts as one
// stacked level, as the publishing machine's overlay over its client does).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

type stats struct {
	BytesFetched int64 `json:"bytes_fetched"`
	Fetches      int64 `json:"fetches"`
	Opens        int64 `json:"opens"`
	BytesRead    int64 `json:"bytes_read"`
}

var (
	latency   time.Duration
	bytesPerS float64
	chunkSize int64
	st        stats

	// The shared link: when it is next free.
	linkMu   sync.Mutex
	linkFree time.Time

	// What the "client cache" holds: per source inode, which chunks (or -1 for
	// a whole small file) were fetched or are being fetched; the channel is
	// closed when the fetch is done.
	cacheMu sync.Mutex
	cache   = map[uint64]map[int64]chan struct{}{}

	// Fetch slots: -parallel concurrent fetches at most.
	slots chan struct{}

	// -log: one line per fetch, to see what a workload pulls in.
	fetchLog   *os.File
	fetchLogMu sync.Mutex
)

func logFetch(path string, chunk, n int64) {
	if fetchLog == nil {
		return
	}
	fetchLogMu.Lock()
	fmt.Fprintf(fetchLog, "%d\t%d\t%s\n", n, chunk, path)
	fetchLogMu.Unlock()
}

// fetch charges one object of n bytes: a round trip, then its turn on the link.
func fetch(n int64) {
	slots <- struct{}{}
	defer func() { <-slots }()
	atomic.AddInt64(&st.Fetches, 1)
	atomic.AddInt64(&st.BytesFetched, n)
	time.Sleep(latency)
	if bytesPerS <= 0 || n == 0 {
		return
	}
	d := time.Duration(float64(n) / bytesPerS * float64(time.Second))
	linkMu.Lock()
	now := time.Now()
	if linkFree.Before(now) {
		linkFree = now
	}
	linkFree = linkFree.Add(d)
	until := linkFree
	linkMu.Unlock()
	time.Sleep(time.Until(until))
}

// obtain makes chunk c of inode ino present: the first caller fetches it
// (fetch(n), logged as path), every other caller waits until that is done.
func obtain(ino uint64, c int64, n int64, path string) {
	cacheMu.Lock()
	m := cache[ino]
	if m == nil {
		m = map[int64]chan struct{}{}
		cache[ino] = m
	}
	done, known := m[c]
	if !known {
		done = make(chan struct{})
		m[c] = done
	}
	cacheMu.Unlock()
	if known {
		<-done
		return
	}
	logFetch(path, c, n)
	fetch(n)
	close(done)
}

// The catalog model (-catalogs): nested catalog roots (relative to SOURCE,
// "" is the root catalog) with their size in bytes, and the loads done or
// under way (closed when done).
var (
	catalogs       bool
	catalogRoots   = map[string]int64{}
	catalogMu      sync.Mutex
	catalogLoads   = map[string]chan struct{}{}
	catalogEntryB  int64
	catalogBaseB   int64
	catalogSrcRoot string
)

// scanCatalogs finds the nested catalog roots beneath src and sizes each
// catalog by the entries it holds (those of its directories down to, not
// into, the next nested roots).
func scanCatalogs(src string) error {
	entries := map[string]int64{}
	var walk func(rel, cat string) error
	walk = func(rel, cat string) error {
		abs := filepath.Join(src, rel)
		des, err := os.ReadDir(abs)
		if err != nil {
			return err
		}
		for _, d := range des {
			if d.Name() == ".cvmfscatalog" && rel != "" {
				cat = rel
				break
			}
		}
		if cat == rel && rel != "" {
			catalogRoots[rel] = 0
		}
		entries[cat] += int64(len(des))
		for _, d := range des {
			if d.IsDir() {
				if err := walk(filepath.Join(rel, d.Name()), cat); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("", ""); err != nil {
		return err
	}
	for root := range catalogRoots {
		catalogRoots[root] = catalogBaseB + catalogEntryB*entries[root]
	}
	return nil
}

// catalogOf is the catalog holding the entries of directory rel.
func catalogOf(rel string) string {
	for rel != "" && rel != "." && rel != "/" {
		if _, ok := catalogRoots[rel]; ok {
			return rel
		}
		rel = filepath.Dir(rel)
	}
	return ""
}

// loadCatalog makes catalog root (and the ones above it) loaded.
func loadCatalog(root string) {
	if root == "" {
		return
	}
	loadCatalog(catalogOf(filepath.Dir(root)))
	catalogMu.Lock()
	done, known := catalogLoads[root]
	if !known {
		done = make(chan struct{})
		catalogLoads[root] = done
	}
	catalogMu.Unlock()
	if known {
		<-done
		return
	}
	n := catalogRoots[root]
	logFetch(filepath.Join(catalogSrcRoot, root, ".cvmfscatalog"), -2, n)
	fetch(n)
	close(done)
}

// needEntries: a lookup or listing in directory node n needs its catalog.
func needEntries(n *node) {
	if catalogs {
		loadCatalog(catalogOf(n.Path(n.Root())))
	}
}

// node wraps the loopback node so that opens go through the fetch model.
type node struct {
	fs.LoopbackNode
}

// claimUID: the owner every entry is reported with (-claim-uid), or -1.
var claimUID int64 = -1

func claim(a *fuse.Attr) {
	if claimUID >= 0 {
		a.Uid, a.Gid = uint32(claimUID), uint32(claimUID)
	}
}

var _ = (fs.NodeGetattrer)((*node)(nil))
var _ = (fs.NodeLookuper)((*node)(nil))

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	errno := n.LoopbackNode.Getattr(ctx, f, out)
	claim(&out.Attr)
	return errno
}

var _ = (fs.NodeStatxer)((*node)(nil))

// Statx answers FUSE_STATX, which the kernel sends for what it does not cache
// (birth time): the owner must be claimed there too.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	errno := n.LoopbackNode.Statx(ctx, f, flags, mask, out)
	if claimUID >= 0 {
		out.Uid, out.Gid = uint32(claimUID), uint32(claimUID)
	}
	return errno
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	needEntries(n)
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	claim(&out.Attr)
	return ch, errno
}

var _ = (fs.NodeOpendirHandler)((*node)(nil))
var _ = (fs.NodeReaddirer)((*node)(nil))

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	needEntries(n)
	return n.LoopbackNode.OpendirHandle(ctx, flags)
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	needEntries(n)
	return n.LoopbackNode.Readdir(ctx)
}

var _ = (fs.NodeOpener)((*node)(nil))

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	p := n.RootData.Path + "/" + n.Path(n.Root())
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	var s syscall.Stat_t
	if err := syscall.Fstat(fd, &s); err != nil {
		syscall.Close(fd)
		return nil, 0, fs.ToErrno(err)
	}
	atomic.AddInt64(&st.Opens, 1)
	if s.Size <= chunkSize {
		obtain(s.Ino, -1, s.Size, p)
	}
	// FOPEN_KEEP_CACHE: what was read stays in the page cache across opens,
	// as it does with the CVMFS client.
	return &file{fd: fd, ino: s.Ino, size: s.Size, path: p}, fuse.FOPEN_KEEP_CACHE, 0
}

// file is a read-only handle without FUSE passthrough, so that every read
// reaches us and is counted.
type file struct {
	fd   int
	ino  uint64
	size int64
	path string
}

var _ = (fs.FileReader)((*file)(nil))
var _ = (fs.FileReleaser)((*file)(nil))

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if f.size > chunkSize {
		end := off + int64(len(buf))
		if end > f.size {
			end = f.size
		}
		for c := off / chunkSize; c*chunkSize < end; c++ {
			n := chunkSize
			if (c+1)*chunkSize > f.size {
				n = f.size - c*chunkSize
			}
			obtain(f.ino, c, n, f.path)
		}
	}
	n, err := syscall.Pread(f.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	atomic.AddInt64(&st.BytesRead, int64(n))
	return fuse.ReadResultData(buf[:n]), 0
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	syscall.Close(f.fd)
	return 0
}

func writeStats(path string) {
	if path == "" {
		return
	}
	snap := stats{
		BytesFetched: atomic.LoadInt64(&st.BytesFetched),
		Fetches:      atomic.LoadInt64(&st.Fetches),
		Opens:        atomic.LoadInt64(&st.Opens),
		BytesRead:    atomic.LoadInt64(&st.BytesRead),
	}
	b, _ := json.Marshal(snap)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err == nil {
		os.Rename(tmp, path)
	}
}

func main() {
	lat := flag.Duration("latency", 2*time.Millisecond, "round trip per fetched object")
	bw := flag.Float64("bandwidth", 1000, "link bandwidth in Mbit/s shared by all fetches (0: unlimited)")
	chunk := flag.Int64("chunk", 8<<20, "CVMFS chunk size: larger files are fetched per chunk")
	statsPath := flag.String("stats", "", "write counters as JSON here on SIGUSR1 and at exit")
	debug := flag.Bool("debug", false, "log FUSE requests")
	logPath := flag.String("log", "", "append one line per fetch here: bytes, chunk (-1: whole file), path")
	parallel := flag.Int("parallel", 16, "most fetches at once (a CVMFS client's 16 connections)")
	flag.Int64Var(&claimUID, "claim-uid", -1, "report every owner as this uid:gid (a client with CVMFS_CLAIM_OWNERSHIP=yes); -1: as in SOURCE")
	flag.BoolVar(&catalogs, "catalogs", false, "model nested catalog loads (directories with a .cvmfscatalog file)")
	flag.Int64Var(&catalogEntryB, "catalog-entry-bytes", 77, "-catalogs: bytes a catalog download costs per entry")
	flag.Int64Var(&catalogBaseB, "catalog-base-bytes", 2048, "-catalogs: bytes a catalog download costs besides its entries")
	flag.Parse()
	if *parallel < 1 {
		log.Fatalf("fuselat: -parallel %d: at least 1", *parallel)
	}
	slots = make(chan struct{}, *parallel)
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: fuselat [flags] SOURCE MOUNTPOINT")
		os.Exit(2)
	}
	latency, bytesPerS, chunkSize = *lat, *bw*1e6/8, *chunk
	src, mnt := flag.Arg(0), flag.Arg(1)
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatalf("fuselat: -log %s: %v", *logPath, err)
		}
		fetchLog = f
	}

	if catalogs {
		catalogSrcRoot = src
		if err := scanCatalogs(src); err != nil {
			log.Fatalf("fuselat: -catalogs: %v", err)
		}
	}
	var s syscall.Stat_t
	if err := syscall.Stat(src, &s); err != nil {
		log.Fatalf("fuselat: source %s: %v", src, err)
	}
	root := &fs.LoopbackRoot{Path: src, Dev: uint64(s.Dev)}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{fs.LoopbackNode{RootData: r}}
	}
	root.RootNode = root.NewNode(root, nil, "", &s)

	// The repository is read-only: the kernel may cache metadata for long, as
	// it does for a CVMFS mount.
	long := time.Hour

	server, err := fs.Mount(mnt, root.RootNode, &fs.Options{
		EntryTimeout: &long,
		AttrTimeout:  &long,
		MountOptions: fuse.MountOptions{
			AllowOther:   true,
			FsName:       "fuselat:" + src,
			Name:         "fuselat",
			Options:      []string{"ro", "default_permissions"},
			Debug:        *debug,
			MaxReadAhead: 128 << 10,
			DirectMount:  true,
			// Passthrough makes a FUSE mount count as a stacked filesystem.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
	})
	if err != nil {
		log.Fatalf("fuselat: mount %s on %s: %v", src, mnt, err)
	}
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sig {
			writeStats(*statsPath)
			if s != syscall.SIGUSR1 {
				server.Unmount()
			}
		}
	}()
	writeStats(*statsPath)
	server.Wait()
	writeStats(*statsPath)
}
