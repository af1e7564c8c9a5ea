package save

import "io"

// SetStreamHook lets the tests replace the snapshot stream before it is
// read.
func SetStreamHook(fn func(io.Reader) io.Reader) { streamHook = fn }
