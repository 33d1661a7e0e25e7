# A failure test of `fireflyer train-pipeline` under mpirun (CMakeLists.txt, PipelineMpi.*):
# passes when the job exits non-zero and every rank printed the expected error, i.e. the line
# "error: ${EXPECT}" appears exactly ${RANKS} times, and fails when the job hangs past TIMEOUT.
#   cmake -DCOMMAND=<argv joined with |> -DEXPECT=<message> -DRANKS=<n> -DTIMEOUT=<s> -P this
cmake_minimum_required(VERSION 3.25)
string(REPLACE "|" ";" argv "${COMMAND}")
execute_process(COMMAND ${argv} OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE rc
                TIMEOUT ${TIMEOUT})
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
