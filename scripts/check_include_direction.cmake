# Proves that a module's include view (fireflyer_module() in CMakeLists.txt) enforces the
# dependency direction: compiles a small probe file with the very command the build uses for the
# module (taken from compile_commands.json, so a build that stopped using the views would fail
# this test), and checks the result. Run by ctest as IncludeDirection.*:
#
#   cmake -DCOMPILE_COMMANDS=<build>/compile_commands.json -DMODULE_TU=<a source of the module>
#         -DCOMPILER=<c++> -DWORK_DIR=<scratch dir> -DMODULE=<name> <check>
#         -P check_include_direction.cmake
#
# <check> is one of
#   -DINCLUDE=<module/file.h> -DEXPECT=FAIL   the include must fail: header not found
#   -DINCLUDE=<a.h,b.h,...>   -DEXPECT=PASS   the includes must compile
#   -DVISIBLE=<a.h,...> -DHIDDEN=<b.h,...>    __has_include must be true for each VISIBLE and
#                                             false for each HIDDEN header (nothing is parsed)
# or -DSCAN_DIR=<src> alone: no #include "..." under it may climb out with "..", which would reach
# a module the view hides (quoted includes look next to the including file first).
cmake_minimum_required(VERSION 3.25)

if(SCAN_DIR)
  file(GLOB_RECURSE files ${SCAN_DIR}/*.h ${SCAN_DIR}/*.cc ${SCAN_DIR}/*.cu ${SCAN_DIR}/*.cuh)
  set(bad "")
  foreach(f IN LISTS files)
    file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"[^\"]*\\.\\./")
    foreach(line IN LISTS lines)
      string(APPEND bad "\n  ${f}: ${line}")
    endforeach()
  endforeach()
  if(bad)
    message(FATAL_ERROR "#include with \"..\" (include \"module/file.h\" instead):${bad}")
  endif()
  list(LENGTH files n)
  message(STATUS "OK: no #include climbs out with \"..\" in ${n} files under ${SCAN_DIR}")
  return()
endif()

foreach(var COMPILE_COMMANDS MODULE_TU COMPILER WORK_DIR MODULE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_include_direction: -D${var}=... is missing")
  endif()
endforeach()
if(NOT EXISTS ${COMPILE_COMMANDS})
  message(FATAL_ERROR "${COMPILE_COMMANDS} does not exist (CMAKE_EXPORT_COMPILE_COMMANDS needs "
                      "the Ninja or Makefile generator)")
endif()

# The module's compile command.
file(READ ${COMPILE_COMMANDS} db)
string(JSON count LENGTH "${db}")
math(EXPR last "${count} - 1")
set(command "")
foreach(i RANGE ${last})
  string(JSON file GET "${db}" ${i} file)
  if(file STREQUAL MODULE_TU)
    string(JSON command GET "${db}" ${i} command)
    string(JSON directory GET "${db}" ${i} directory)
    break()
  endif()
endforeach()
if(NOT command)
  message(FATAL_ERROR "no compile command for ${MODULE_TU} in ${COMPILE_COMMANDS}")
endif()

# Same flags, but only a syntax check of the probe: drop the launcher (everything before the
# compiler), the output, the source and the dependency-file options.
separate_arguments(args UNIX_COMMAND "${command}")
list(FIND args "${COMPILER}" at)
if(at LESS 0)
  message(FATAL_ERROR "compiler ${COMPILER} not found in the command: ${command}")
endif()
list(SUBLIST args ${at} -1 args)
set(flags "")
set(skip_next FALSE)
foreach(arg IN LISTS args)
  if(skip_next)
    set(skip_next FALSE)
  elseif(arg MATCHES "^-(o|c|MF|MT|MQ)$")
    set(skip_next TRUE)
  elseif(NOT arg MATCHES "^-(MD|MMD)$")
    list(APPEND flags "${arg}")
  endif()
endforeach()

# The probe.
set(probe "// Probe of module ${MODULE}'s include view, by check_include_direction.cmake.\n")
if(DEFINED INCLUDE)
  if(NOT EXPECT MATCHES "^(PASS|FAIL)$")
    message(FATAL_ERROR "-DEXPECT must be PASS or FAIL")
  endif()
  string(REPLACE "," ";" includes "${INCLUDE}")
  list(LENGTH includes n)
  if(EXPECT STREQUAL "FAIL" AND NOT n EQUAL 1)
    message(FATAL_ERROR "EXPECT=FAIL takes one header (the first missing one ends the compile)")
  endif()
  foreach(hdr IN LISTS includes)
    string(APPEND probe "#include \"${hdr}\"\n")
  endforeach()
else()
  set(EXPECT PASS)
  string(REPLACE "," ";" visible "${VISIBLE}")
  string(REPLACE "," ";" hidden "${HIDDEN}")
  foreach(hdr IN LISTS visible)
    string(APPEND probe "#if !__has_include(\"${hdr}\")\n"
                        "#error \"${hdr} should be visible to module ${MODULE}\"\n#endif\n")
  endforeach()
  foreach(hdr IN LISTS hidden)
    string(APPEND probe "#if __has_include(\"${hdr}\")\n"
                        "#error \"${hdr} should be hidden from module ${MODULE}\"\n#endif\n")
  endforeach()
endif()
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
file(WRITE ${WORK_DIR}/probe.cc "${probe}")

execute_process(COMMAND ${flags} -fsyntax-only ${WORK_DIR}/probe.cc
                WORKING_DIRECTORY ${directory}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
list(JOIN flags " " shown)
string(CONCAT report "module ${MODULE}, probe ${WORK_DIR}/probe.cc:\n${probe}"
       "command: ${shown} -fsyntax-only ${WORK_DIR}/probe.cc\ncompiler output:\n${out}")
if(EXPECT STREQUAL "PASS")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "expected to compile, but failed (exit ${rc}): ${report}")
  endif()
  message(STATUS "OK: compiles as expected. ${report}")
else()
  if(rc EQUAL 0)
    message(FATAL_ERROR "expected the include to fail, but it compiled: ${report}")
  endif()
  # Only "not found" counts: failing for any other reason (a bad flag, a syntax error) would
  # prove nothing about the view.
  string(REPLACE "." "\\." hdr_re "${INCLUDE}")
  if(NOT out MATCHES "${hdr_re}'?: No such file or directory|'${hdr_re}' file not found")
    message(FATAL_ERROR "the compile failed, but not because ${INCLUDE} is hidden: ${report}")
  endif()
  message(STATUS "OK: the wrong include fails as expected. ${report}")
endif()
