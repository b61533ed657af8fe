// Command gocheck runs containers/storage's own archive code so that the Rust
// archive tests can compare against the reference implementation:
//
//	go build -o /tmp/gocheck . && \
//	CVMFS_GO_CHANGES=/tmp/gocheck CVMFS_GO_ARCHIVE=/tmp/gocheck cargo test --test 'archive_*'
//
// Subcommands:
//
//	gocheck changes RW LOWER...     OverlayChanges as JSON
//	gocheck untar DEST < tar        Untar with the overlay whiteout format, prints directory.Size
//	gocheck tar DIR LOWER... > tar  TarWithOptions as the overlay driver's Diff
//	gocheck headers < tar           the headers archive/tar reads, one JSON line each,
//	                                then {"end":true} or {"error":"..."}
package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"go.podman.io/storage/pkg/archive"
	"go.podman.io/storage/pkg/directory"
)

func main() {
	switch os.Args[1] {
	case "changes":
		c, err := archive.OverlayChanges(os.Args[3:], os.Args[2])
		check(err)
		type ch struct {
			Path string `json:"path"`
			Kind int    `json:"kind"`
		}
		out := []ch{}
		for _, x := range c {
			out = append(out, ch{x.Path, int(x.Kind)})
		}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	case "untar":
		err := archive.UntarUncompressed(os.Stdin, os.Args[2], &archive.TarOptions{WhiteoutFormat: archive.OverlayWhiteoutFormat})
		check(err)
		s, err := directory.Size(os.Args[2])
		check(err)
		fmt.Println(s)
	case "headers":
		headers(os.Stdin)
	case "tar":
		r, err := archive.TarWithOptions(os.Args[2], &archive.TarOptions{Compression: archive.Uncompressed, WhiteoutFormat: archive.OverlayWhiteoutFormat, WhiteoutData: os.Args[3:]})
		check(err)
		_, err = io.Copy(os.Stdout, r)
		check(err)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// headers prints what archive/tar reads from r: per entry name and linkname
// (bytes, base64 in JSON), typeflag, size, mode, uid and gid; the content is
// read too, so errors in it (sparse maps) count.
func headers(r io.Reader) {
	type hdr struct {
		Name     []byte `json:"name"`
		Linkname []byte `json:"linkname"`
		Typeflag int    `json:"typeflag"`
		Size     int64  `json:"size"`
		Mode     int64  `json:"mode"`
		Uid      int    `json:"uid"`
		Gid      int    `json:"gid"`
	}
	enc := json.NewEncoder(os.Stdout)
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			check(enc.Encode(map[string]bool{"end": true}))
			return
		}
		if err == nil {
			_, err = io.Copy(io.Discard, tr)
		}
		if err != nil {
			check(enc.Encode(map[string]string{"error": err.Error()}))
			return
		}
		check(enc.Encode(hdr{[]byte(h.Name), []byte(h.Linkname), int(h.Typeflag), h.Size, h.Mode, h.Uid, h.Gid}))
	}
}
