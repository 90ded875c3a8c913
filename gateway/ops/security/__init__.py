"""Authentication, audit and the safety helpers every admin path uses."""
