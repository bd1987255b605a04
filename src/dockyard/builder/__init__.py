"""`dockyard build`: build a catalogue of images in dependency order, skip what is unchanged.

The builder is a client of a registry (ours or any other), not part of the server: it
reads a catalogue directory, renders its Dockerfiles, derives the graph from their FROM
lines, keys each image by its inputs, and drives a container engine (buildah by default).
"""
