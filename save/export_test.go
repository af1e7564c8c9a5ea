package save

import "io"

// SetStreamHook lets the tests replace the snapshot stream before it is
// read.
func SetStreamHook(fn func(io.Reader) io.Reader) { streamHook = fn }

// SetAfterProbe lets the tests act between the probe of the member and
// its snapshot.
func SetAfterProbe(fn func()) { afterProbe = fn }
