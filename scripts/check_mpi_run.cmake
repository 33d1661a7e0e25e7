# A test of `fireflyer train-pipeline` under mpirun (CMakeLists.txt, PipelineMpi.*); fails when
# the job hangs past TIMEOUT.
#   success test (-DPASS=<regex>): passes when the job exits 0 and its output matches the regex.
#   failure test (-DEXPECT=<message> -DRANKS=<n>): passes when the job exits non-zero and every
#   rank printed the error, i.e. the line "error: ${EXPECT}" appears exactly ${RANKS} times.
#   cmake -DCOMMAND=<argv joined with |> (-DPASS=... | -DEXPECT=... -DRANKS=...) -DTIMEOUT=<s> -P this
cmake_minimum_required(VERSION 3.25)
string(REPLACE "|" ";" argv "${COMMAND}")
execute_process(COMMAND ${argv} OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE rc
                TIMEOUT ${TIMEOUT})
if(DEFINED PASS)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "the job exited with ${rc}; its output:\n${out}")
  endif()
  if(NOT out MATCHES "${PASS}")
    message(FATAL_ERROR "the output does not match \"${PASS}\":\n${out}")
  endif()
  message(STATUS "${out}")
  return()
endif()
if(rc STREQUAL "0")
  message(FATAL_ERROR "the job succeeded but should have failed; its output:\n${out}")
endif()
if(NOT rc MATCHES "^[0-9]+$")
  message(FATAL_ERROR "the job did not exit by itself (${rc}); its output:\n${out}")
endif()
set(line "error: ${EXPECT}\n")
string(LENGTH "${line}" line_length)
set(rest "${out}")
set(count 0)
string(FIND "${rest}" "${line}" at)
while(NOT at EQUAL -1)
  math(EXPR count "${count} + 1")
  math(EXPR at "${at} + ${line_length}")
  string(SUBSTRING "${rest}" ${at} -1 rest)
  string(FIND "${rest}" "${line}" at)
endwhile()
if(NOT count EQUAL RANKS)
  message(FATAL_ERROR
    "expected \"error: ${EXPECT}\" from each of ${RANKS} ranks, found it ${count} times; the "
    "output:\n${out}")
endif()
message(STATUS "exit status ${rc}, the error printed by all ${RANKS} ranks")
