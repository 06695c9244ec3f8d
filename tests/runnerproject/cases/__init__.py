# As a user writes it for plain `python -m unittest`: set Django up before the
# test modules import models.
import djasynctest  # noqa: F401
