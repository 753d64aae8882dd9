"""Training one fold: the epoch loop, optimiser and schedules, resume state, interrupts, torchrun."""
