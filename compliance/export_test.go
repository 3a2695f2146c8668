package compliance

// SetStepHook lets tests stop an erasure after a step, as a crash would.
func SetStepHook(s *Service, hook func(step string) error) { s.stepHook = hook }
