// The types of ours an app meets in VirtioUserDevice's API, re-exported by name: importing
// VirtioUser gives exactly these, not the modules below it (which are the package's own).
@_exported import enum VirtioCore.ConnectionMode
@_exported import struct VirtioCore.MACAddress
@_exported import enum VirtioCore.MemoryBacking
@_exported import struct VirtioCore.SocketFileAccess
@_exported import enum VirtioCore.VirtioError
@_exported import enum VirtioCore.ConnectionFailure
@_exported import enum VirtioCore.NegotiationFailure
@_exported import enum VirtioCore.MemoryFailure
@_exported import enum VirtioCore.RingViolation
@_exported import enum VirtioCore.ProtocolViolation
@_exported import struct VirtioCore.InvalidSetting
@_exported import enum VirtioCore.StateFailure
@_exported import struct VirtioCore.SystemCallFailure
@_exported import struct VirtioCore.VirtioFeatures
@_exported import struct VirtioCore.VirtioNetOffload
@_exported import struct VhostUser.VhostUserProtocolFeatures
