"""Media input and output: photos (``image``), finding photos in a folder tree (``walk``), video (``video``),
native decoders' messages (``quiet``), and folders of images as plain arrays for training and benchmarks
(``folders``)."""
