// Command tsverify checks the publisher's tar-split files with the real Go
// implementation containers/storage uses (github.com/vbatts/tar-split):
//
//	tsverify asm <file.tar-split.gz> <layerfs>   reassemble; print "sha256:<hex> <size>"
//	tsverify disasm <file.tar>                    print Go's own tar-split JSON lines
package main

import (
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	"github.com/vbatts/tar-split/tar/asm"
	"github.com/vbatts/tar-split/tar/storage"
)

func die(err error) {
	fmt.Fprintln(os.Stderr, "tsverify:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 {
		die(fmt.Errorf("usage: tsverify asm <ts.gz> <dir> | disasm <tar>"))
	}
	switch os.Args[1] {
	case "asm":
		f, err := os.Open(os.Args[2])
		if err != nil {
			die(err)
		}
		gz, err := gzip.NewReader(f)
		if err != nil {
			die(err)
		}
		out := asm.NewOutputTarStream(storage.NewPathFileGetter(os.Args[3]), storage.NewJSONUnpacker(gz))
		h := sha256.New()
		n, err := io.Copy(h, out)
		if err != nil {
			die(err)
		}
		fmt.Printf("sha256:%x %d\n", h.Sum(nil), n)
	case "disasm":
		f, err := os.Open(os.Args[2])
		if err != nil {
			die(err)
		}
		r, err := asm.NewInputTarStream(f, storage.NewJSONPacker(os.Stdout), nil)
		if err != nil {
			die(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			die(err)
		}
	default:
		die(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
