"""The toolkit's name and version, as written into the files it makes (e.g. DICOM Manufacturer Model Name and
Software Versions of a synthetic CT)."""
TOOLKIT_NAME = 'MRNet toolkit'
__version__ = '0.1.0'
