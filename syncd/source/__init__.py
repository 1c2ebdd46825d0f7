"""Where changes come from: the initial/repair scan and the change stream."""
