package defrag

// SetCommitBytes lets tests make the copy commit (and report progress) often.
func SetCommitBytes(n int) { commitBytes = n }
