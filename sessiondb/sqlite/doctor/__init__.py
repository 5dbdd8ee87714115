"""The doctor of SQLite stores: content and lock checks, repair, and the page scanner it uses."""
