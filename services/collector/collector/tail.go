package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// fileID names a file across renames: device and inode.
type fileID struct{ Dev, Ino uint64 }

func (id fileID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

func idOf(fi os.FileInfo) fileID {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return fileID{}
	}
	return fileID{Dev: uint64(st.Dev), Ino: st.Ino}
}

// tailer follows one path through rotation (rename and re-create) and
// truncation (copytruncate). It reads ahead of what is acknowledged: read
// is where the next line starts, acked where the last acknowledged one
// ended; only acked is saved.
type tailer struct {
	path    string
	service string // published as the wrapped lines' service
	f       *os.File
	id      fileID
	read    int64
	acked   int64
	partial []byte // a CRI "P" line waiting for its end
	// partialStart is where the held partial line began.
	partialStart int64
	// truncated is set when the file was found shorter than what was read.
	truncated bool
	// old is the file a rotation moved away, read to its end first.
	old *tailer
}

// line is one line read from a file, with where it ends.
type line struct {
	t     *tailer
	id    fileID
	start int64
	end   int64
	text  []byte
	trunc bool
}

// open opens the path if it is not open, resuming at the saved position
// for the file's ID (ignored when it is past the end: the file was
// truncated). saved may be nil: no positions.
func (t *tailer) open(saved func(fileID) (int64, bool)) error {
	if t.f != nil {
		return nil
	}
	f, err := os.Open(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // not yet
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	t.f, t.id = f, idOf(fi)
	t.read, t.acked = 0, 0
	if saved == nil {
		return nil
	}
	if off, ok := saved(t.id); ok && off <= fi.Size() {
		t.read, t.acked = off, off
	}
	return nil
}

// check notices rotation and truncation before a read.
func (t *tailer) check() error {
	if t.f == nil {
		return nil
	}
	fi, err := os.Stat(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // moved away; keep reading what we have open
	}
	if err != nil {
		return err
	}
	if id := idOf(fi); id != t.id {
		// Rotated: what is open is the old file. Finish it, then follow
		// the new one from its start.
		if t.old == nil {
			old := *t
			old.old = nil
			t.old = &old
			t.f, t.id, t.read, t.acked, t.partial = nil, fileID{}, 0, 0, nil
		}
		return nil
	}
	if fi.Size() < t.read {
		// Truncated in place: start over.
		t.read, t.acked, t.partial, t.truncated = 0, 0, nil, true
	}
	return nil
}

// next reads up to budget bytes of complete lines.
func (t *tailer) next(budget, maxLine int) ([]line, error) {
	if t.f == nil || budget <= 0 {
		return nil, nil
	}
	fi, err := t.f.Stat()
	if err != nil {
		return nil, err
	}
	avail := fi.Size() - t.read
	if avail <= 0 {
		return nil, nil // nothing new: no read, no buffer
	}
	buf := make([]byte, min(int64(min(budget, 1<<20)+maxLine), avail))
	n, err := t.f.ReadAt(buf, t.read)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	buf = buf[:n]
	var out []line
	for len(buf) > 0 {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if len(buf) >= maxLine { // a line longer than the limit: cut it
				out = append(out, line{t: t, id: t.id, start: t.read, end: t.read + int64(maxLine), text: buf[:maxLine], trunc: true})
				t.read += int64(maxLine)
			}
			break
		}
		text := buf[:i]
		trunc := false
		if len(text) > maxLine {
			text, trunc = text[:maxLine], true
		}
		out = append(out, line{t: t, id: t.id, start: t.read, end: t.read + int64(i) + 1, text: text, trunc: trunc})
		t.read += int64(i) + 1
		buf = buf[i+1:]
	}
	return out, nil
}

// drained reports whether a rotated-away file is read and acknowledged to
// its end, so it can be closed.
func (t *tailer) drained() bool {
	fi, err := t.f.Stat()
	return err == nil && t.acked >= fi.Size() && t.read >= fi.Size()
}

func (t *tailer) close() {
	if t.f != nil {
		_ = t.f.Close()
		t.f = nil
	}
}
