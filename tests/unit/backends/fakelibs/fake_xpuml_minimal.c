/* fake_xpuml_minimal.c - fake_xpuml.c built without GetName, GetMinorNumber and GetPowerUsage, the way an
 * older libxpuml lacks them (missing-symbol tests). */
#define OMIT_XPUML_NAME
#define OMIT_XPUML_MINOR
#define OMIT_XPUML_POWER
#include "fake_xpuml.c"
