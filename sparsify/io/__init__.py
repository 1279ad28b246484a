"""File-level input and output: where a run may write, and publishing staged files all or nothing."""
