# Runs two commands and passes when both exit 0 and print the same stdout (CMakeLists.txt,
# EpMpi.generate_*: `generate --ep` under mpirun against one process).
#   cmake -DCOMMAND_A=<argv joined with |> -DCOMMAND_B=<...> -DTIMEOUT=<s> -P this
cmake_minimum_required(VERSION 3.25)
string(REPLACE "|" ";" argv_a "${COMMAND_A}")
string(REPLACE "|" ";" argv_b "${COMMAND_B}")
execute_process(COMMAND ${argv_a} OUTPUT_VARIABLE out_a ERROR_VARIABLE err_a RESULT_VARIABLE rc_a
                TIMEOUT ${TIMEOUT})
execute_process(COMMAND ${argv_b} OUTPUT_VARIABLE out_b ERROR_VARIABLE err_b RESULT_VARIABLE rc_b
                TIMEOUT ${TIMEOUT})
if(NOT rc_a STREQUAL "0" OR NOT rc_b STREQUAL "0")
  message(FATAL_ERROR "exit ${rc_a} / ${rc_b}:\n${err_a}\n${err_b}")
endif()
if(NOT out_a STREQUAL out_b)
  message(FATAL_ERROR "the outputs differ:\n--- one process:\n${out_a}\n--- mpirun:\n${out_b}")
endif()
if(out_a STREQUAL "")
  message(FATAL_ERROR "no output")
endif()
message(STATUS "same output: ${out_a}")
