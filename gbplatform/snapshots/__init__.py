"""Snapshots devices take and upload themselves (GB/T 28181-2022 §9.14 SnapShotConfig /
UploadSnapShotFinished): the session service, its store, HTTP routes and shapes."""
