// The types of ours an operator's code meets in the back-end's and the switch's API, re-exported
// by name: importing VhostUserBackend gives exactly these, not the modules below it.
@_exported import enum VirtioCore.ConnectionMode
@_exported import struct VirtioCore.MACAddress
@_exported import struct VirtioCore.SocketFileAccess
@_exported import struct VirtioCore.VirtioError
@_exported import struct VirtioCore.VirtioFeatures
@_exported import struct VhostUser.VhostUserProtocolFeatures
