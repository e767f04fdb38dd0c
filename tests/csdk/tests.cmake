# tests.cmake - the C SDK's test programs and ctest entries, label "sdk".
#   csdk.unit        SDK behaviour without a broker (argument checks, queue bounds,
#                    callback guarantees, backoff, the run loop, threads)
#   csdk.<scenario>  the SDK, `chorus` and `chorus-ticker` against a real chorusd
#                    (csdk.fake, csdk.retry, csdk.retry_off: against scripted Python
#                    servers; retry = `unavailable` and close code 4013); see test_csdk.py
# Included by client-sdk/c/CMakeLists.txt, which defines the targets and then
# calls chorus_csdk_register_tests() in a directory where testing is enabled.
set_property(GLOBAL PROPERTY CHORUS_CSDK_DIR ${CMAKE_CURRENT_LIST_DIR})

add_executable(csdk_unit ${CMAKE_CURRENT_LIST_DIR}/csdk_unit.c)
target_link_libraries(csdk_unit PRIVATE chorus_client PkgConfig::LWS Threads::Threads)

add_executable(csdk_agent ${CMAKE_CURRENT_LIST_DIR}/csdk_agent.c)
target_link_libraries(csdk_agent PRIVATE chorus_client PkgConfig::LWS Threads::Threads)

function(chorus_csdk_register_tests)
  get_property(dir GLOBAL PROPERTY CHORUS_CSDK_DIR)
  get_property(done GLOBAL PROPERTY CHORUS_CSDK_TESTS_REGISTERED)
  if(done)
    return()
  endif()
  set_property(GLOBAL PROPERTY CHORUS_CSDK_TESTS_REGISTERED TRUE)

  add_test(NAME csdk.unit COMMAND csdk_unit)
  set_tests_properties(csdk.unit PROPERTIES LABELS sdk TIMEOUT 120)

  # Debian's python3 has python3-websockets; a pyenv python3 first in PATH may not.
  find_program(CSDK_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
  if(NOT CSDK_PYTHON)
    find_program(CSDK_PYTHON python3)
  endif()
  if(NOT CSDK_PYTHON)
    message(WARNING "python3 not found: the C SDK behaviour tests are not registered")
    return()
  endif()
  set(env
    "CHORUSD=$<TARGET_FILE:chorusd>"
    "CHORUS_CLI=$<TARGET_FILE:chorus_cli>"
    "CHORUS_TICKER=$<TARGET_FILE:chorus_ticker>"
    "CSDK_AGENT=$<TARGET_FILE:csdk_agent>")
  foreach(scenario roundtrip cli reconnect resume fake retry retry_off ticker server_api)
    add_test(NAME csdk.${scenario}
      COMMAND ${CSDK_PYTHON} ${dir}/test_csdk.py ${scenario}
      WORKING_DIRECTORY ${dir})
    set_tests_properties(csdk.${scenario} PROPERTIES
      ENVIRONMENT "${env}" LABELS sdk TIMEOUT 120)
  endforeach()
endfunction()
