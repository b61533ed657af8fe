module cvmfs-podman/tests/publish/tsverify

go 1.22

require github.com/vbatts/tar-split v0.12.1
