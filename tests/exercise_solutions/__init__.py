"""Solutions of the book's exercises: for each exercise key, a correct function and typical
wrong ones. They live here, not in the chapters; tests/test_exercises.py runs every checker
on them."""
