"""The Resource Manager console: a multithreaded urwid TUI (urwid is imported only in app.py)."""
