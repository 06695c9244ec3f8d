# settings.py
DJASYNCTEST = {"LOOP_SCOPE": "class"}
