// gka/version.h: library version, used by the package config and the versioned namespace.
#pragma once

#define GKA_VERSION_MAJOR 0
#define GKA_VERSION_MINOR 1
#define GKA_VERSION_PATCH 0
#define GKA_VERSION_STRING "0.1.0"
