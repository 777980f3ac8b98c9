"""The safe loader's machinery: realise an analysed pickle's tensors, map storages, write safetensors.

Nothing here unpickles. The symbolic pickle machine builds the object graph; :mod:`.graph` walks
it and realises only the constructors it knows (tensor rebuild functions, storages, OrderedDict,
dtypes, ...) with airlock's own code. Tensor bytes are read from a memory map of the file.
"""
