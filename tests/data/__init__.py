import pytest

# the shared `fails` helper asserts; rewrite it so a failure shows the values, as in a test
pytest.register_assert_rewrite("tests.data.validation_cases")
