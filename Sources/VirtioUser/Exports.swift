// The types of ours an app meets in VirtioUserDevice's API, re-exported by name: importing
// VirtioUser gives exactly these, not the modules below it (which are the package's own).
@_exported import enum VirtioCore.ConnectionMode
@_exported import struct VirtioCore.MACAddress
@_exported import enum VirtioCore.MemoryBacking
@_exported import struct VirtioCore.SocketFileAccess
@_exported import struct VirtioCore.VirtioError
@_exported import struct VirtioCore.VirtioFeatures
@_exported import struct VirtioCore.VirtioNetOffload
@_exported import struct VhostUser.VhostUserProtocolFeatures
