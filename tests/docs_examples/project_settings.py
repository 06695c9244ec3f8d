# settings.py
DJASYNCTEST = {"LOOP_SCOPE": "session"}
