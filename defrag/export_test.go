package defrag

// SetProgressBytes lets tests make the copy report progress often.
func SetProgressBytes(n int) { progressBytes = n }
