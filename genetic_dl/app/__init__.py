"""The application: the command line, run directories, reports, checkpoints, tracking,
the watchdog and the compile cache. Nothing else in the library imports it."""
