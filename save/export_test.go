package save

// SetBeforeCrossCheck lets the tests change a saved file before its HashKV
// is compared with the member's.
func SetBeforeCrossCheck(fn func(path string)) { beforeCrossCheck = fn }
