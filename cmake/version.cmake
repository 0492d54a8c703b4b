# The version agiled, agilectl and agile-memd print with --version:
# `git describe --always --dirty` of the source tree, taken at every build (a
# commit or an edit shows without re-running cmake), or AGILE_FALLBACK_VERSION
# outside a git checkout. Targets link agile_version and include
# "agile/version.h" (AGILE_VERSION); the header is rewritten only when the
# version changes, so an unchanged tree rebuilds nothing.
set(AGILE_FALLBACK_VERSION 0.1.0)
set(AGILE_VERSION_ROOT ${CMAKE_BINARY_DIR}/include/agile_version)
set(AGILE_VERSION_ARGS -DSRC=${CMAKE_SOURCE_DIR} -DOUT=${AGILE_VERSION_ROOT}/agile/version.h
    -DFALLBACK=${AGILE_FALLBACK_VERSION} -P ${CMAKE_CURRENT_LIST_DIR}/write-version.cmake)
execute_process(COMMAND ${CMAKE_COMMAND} ${AGILE_VERSION_ARGS})  # exists before the first build
add_custom_target(agile_version_header
  COMMAND ${CMAKE_COMMAND} ${AGILE_VERSION_ARGS}
  BYPRODUCTS ${AGILE_VERSION_ROOT}/agile/version.h
  VERBATIM)
add_library(agile_version INTERFACE)
target_include_directories(agile_version INTERFACE ${AGILE_VERSION_ROOT})
add_dependencies(agile_version agile_version_header)
