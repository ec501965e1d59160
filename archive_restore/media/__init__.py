"""Media input and output: photos (`image`), finding photos in a folder tree (`walk`)."""
