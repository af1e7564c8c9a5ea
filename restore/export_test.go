package restore

// SetPhaseHook lets tests stop a restore at each of its steps.
func SetPhaseHook(f func(string)) { phaseHook = f }
