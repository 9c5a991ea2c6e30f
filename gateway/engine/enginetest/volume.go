package enginetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// SmallVolume mounts a tmpfs of size bytes on a fresh temporary directory,
// for disk-full drills, and unmounts it at cleanup (lazily, should
// something still hold it). Mounting needs root: without it the test is
// skipped, but it fails when CI is set, because CI runs as root and must
// run the drills.
func SmallVolume(tb testing.TB, size int) string {
	tb.Helper()
	dir := tb.TempDir()
	opts := fmt.Sprintf("size=%d,mode=0700", size)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("mount a tmpfs of %d bytes (CI runs as root and must run this drill): %v", size, err)
		}
		tb.Skipf("a disk-full drill needs root to mount a small tmpfs: %v", err)
	}
	tb.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// Fill writes a file in dir until its file system is full (ENOSPC) and
// returns the file's path: removing it gives the space back.
func Fill(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatalf("fill %s: %v", dir, err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				tb.Fatalf("fill %s: %v", dir, err)
			}
			return path
		}
	}
}
